// Command runner runs HTTP plugins shipped as container images: each in its own limited,
// hardened Docker container, behind a reverse proxy at /plugins/<name>/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise the module
// version (or "dev") is used.
var version = ""

const usage = `runner runs HTTP plugins shipped as container images.

Usage:
  runner <command> [flags]

Commands:
  up        start every plugin of a config and serve them at /plugins/<name>/ (foreground)
  validate  check a config (no Docker needed); exit 1 with file:line:col diagnostics
  plan      show what would change against what runs (read-only); exit 0 none, 2 changes
  ps        list the plugins of the running runner: state, generation, uptime, restarts
  logs      print (-f: follow) a plugin's container log
  events    print what happens in the running runner until Ctrl-C
  reload    make the running runner apply its config files now (like SIGHUP)
  restart   replace a plugin's container by a fresh one, start-first
  pull      pull plugin images now and say what changed (changed ones are replaced)
  call      send a request to a plugin through the public proxy
  down      stop and remove the runner's containers, network and host rules, even if it is dead
  init      write a new plugin's repository: the plugin on the kit, Dockerfile,
            Makefile, plugins.hcl and a test under the real runner
  version   print the version

ps, logs, events, reload, restart and pull talk to the admin API of "runner up" (address and
token from the config of -c, or --admin and --token-file). call goes through the public
proxy; validate, plan and down need no running runner.

Run "runner <command> -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "up":
		err = cmdUp(rest, stdout, stderr)
	case "validate":
		err = cmdValidate(rest, stdout, stderr)
	case "plan":
		err = cmdPlan(rest, stdout, stderr)
	case "ps":
		err = cmdPs(rest, stdout, stderr)
	case "logs":
		err = cmdLogs(rest, stdout, stderr)
	case "events":
		err = cmdEvents(rest, stdout, stderr)
	case "reload":
		err = cmdReload(rest, stdout, stderr)
	case "restart":
		err = cmdRestart(rest, stdout, stderr)
	case "call":
		err = cmdCall(rest, stdout, stderr)
	case "pull":
		err = cmdPull(rest, stdout, stderr)
	case "down":
		err = cmdDown(rest, stdout, stderr)
	case "init":
		err = cmdInit(rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "runner", versionString())
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "runner: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage), errors.Is(err, errChanges):
		return 2
	case errors.Is(err, errReported):
		return 1
	default:
		fmt.Fprintf(stderr, "runner %s: %v\n", cmd, err)
		return 1
	}
}

var (
	errUsage    = errors.New("usage")
	errReported = errors.New("reported") // already printed to the user
)

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// newFlags makes a command's flag set with a -c flag and a usage text.
func newFlags(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *string) {
	return newFlagsArgs(name, "", synopsis, stderr)
}

// newFlagsArgs is newFlags for a command with positional arguments (argsUsage).
func newFlagsArgs(name, argsUsage, synopsis string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("c", "plugins.hcl", "config `file`; every *.hcl in its runner.plugins_dir is read too")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: runner %s [flags]%s\n\n%s\n\nFlags:\n", name, argsUsage, synopsis)
		fs.PrintDefaults()
	}
	return fs, cfg
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("bad --log-format %q: use text or json", format)
	}
}

// isTerminalWriter reports whether w is a terminal (a live progress line, not a log).
func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}

// isTerminal reports whether f is a character device (for colored diagnostics).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
