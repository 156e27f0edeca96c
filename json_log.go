package main

import (
	"log/slog"
	"os"

	"github.com/go-logr/logr"
)

// jsonLogger is the structured stderr logger of the per-VM and per-node
// processes (sidecar, node agent): log/slog rather than the manager's zap,
// since they run once per VM or node and their footprint matters. level is
// the --log-level flag's value.
func jsonLogger(level string) (logr.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return logr.Logger{}, err
	}
	return logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// logLevelHelp is the --log-level flag's help.
const logLevelHelp = "log level: debug, info, warn or error"
