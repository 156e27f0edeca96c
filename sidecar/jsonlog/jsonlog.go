// Package jsonlog is the structured stderr logger of the per-VM and per-node
// processes (the sidecar and the node agent): log/slog rather than the
// manager's zap, since one runs per VM or node and its footprint matters.
package jsonlog

import (
	"log/slog"
	"os"

	"github.com/go-logr/logr"
)

// LevelHelp is the --log-level flag's help.
const LevelHelp = "log level: debug, info, warn or error"

// New returns a JSON logger on stderr at level, the --log-level flag's value.
func New(level string) (logr.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return logr.Logger{}, err
	}
	return logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
