package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
)

// guardEnv makes this program a guard: run the command in its arguments and SIGTERM it
// exactly once when stdin reaches EOF (the bench closed it, or died, even by SIGKILL) or
// when the guard itself gets SIGTERM; exit with the command's status. This way the runner
// (and so its containers) is shut down gracefully even when the bench is killed with -9,
// and a terminal's Ctrl-C reaches it once, through the bench, not also directly (a second
// Ctrl-C makes the runner exit without its cleanup).
const guardEnv = "XCORE_BENCH_GUARD"

func guard(args []string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // files: the runner can log after we die
	if err := cmd.Start(); err != nil {
		os.Stderr.WriteString("bench guard: " + err.Error() + "\n")
		return 1
	}
	var once sync.Once
	stop := func() { once.Do(func() { _ = cmd.Process.Signal(syscall.SIGTERM) }) }
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	go func() {
		<-term
		stop()
	}()
	err := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode()
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
	}
	return 1
}
