package singlenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL, as a
// Pod's terminationGracePeriodSeconds.
const stopGrace = 10 * time.Second

// Process is a long-running child whose output goes to a log file.
type Process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// StartProcess starts name with args and the extra environment, appending
// its output to logPath.
func StartProcess(logPath, name string, args []string, env ...string) (*Process, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	return StartCommand(logPath, cmd)
}

// StartCommand starts a prepared command, appending its output to logPath.
func StartCommand(logPath string, cmd *exec.Cmd) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// WaitReady polls ready every interval until it says yes, ctx ends or the
// process exits: a process that died while starting fails at once, not at
// the deadline.
func (p *Process) WaitReady(ctx context.Context, interval time.Duration, ready func(context.Context) bool) error {
	return wait.PollUntilContextCancel(ctx, interval, true, func(ctx context.Context) (bool, error) {
		select {
		case <-p.done:
			return false, fmt.Errorf("exited while starting: %v", p.err) //nolint:errorlint // nil for a clean exit: shown, not wrapped
		default:
		}
		return ready(ctx), nil
	})
}

// Stop sends SIGTERM, then SIGKILL after stopGrace, and waits. A process
// that exits on SIGTERM is not an error.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM", p.cmd.Path, stopGrace)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && !ee.Exited() {
		return nil // ended by the signal
	}
	return p.err
}
