package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nginxConf is the anchor's config: upstream keepalive, HTTP/1.1 to the upstream, the
// same prefix strip as the runner, bodies buffered in memory (never on disk).
const nginxConf = `daemon off;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  client_max_body_size 10m;
  client_body_buffer_size 2m;
  upstream plugin {
    server %[2]s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:%[3]d;
    location /plugins/hello/ {
      proxy_pass http://plugin/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffer_size 16k;
      proxy_buffers 128 16k;
      proxy_max_temp_file_size 0;
    }
  }
}
`

type nginxProc struct {
	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
}

// startNginx runs nginx in the foreground (its own process group, config, pid and logs in
// a temp dir of its own) as a reverse proxy of /plugins/hello/ to upstream (host:port).
func startNginx(ctx context.Context, bin, upstream string) (*nginxProc, error) {
	dir, err := mkTemp("nginx-")
	if err != nil {
		return nil, err
	}
	// nginx's workers run as another user when started by root.
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, upstream, port), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	n := &nginxProc{dir: dir, port: port, exited: make(chan struct{})}
	n.cmd = exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
	// Its own process group (the workers too): a terminal's Ctrl-C reaches the bench, which
	// stops nginx; if the bench dies, the kernel sends the master SIGTERM.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	n.cmd.Stdout, n.cmd.Stderr = nil, nil
	if err := n.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", n.addr(), time.Second)
		if err == nil {
			c.Close()
			return n, nil
		}
		select {
		case <-n.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			n.stop()
			return nil, fmt.Errorf("nginx exited at start: %s", strings.TrimSpace(string(log)))
		case <-ctx.Done():
			n.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.stop()
			return nil, fmt.Errorf("nginx not listening on %s after 10s", n.addr())
		}
	}
}

func (n *nginxProc) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// stop: SIGTERM to the master (fast shutdown: it stops its workers and waits for them),
// SIGKILL to its process group after 10s; then the temp dir goes.
func (n *nginxProc) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	_ = os.RemoveAll(n.dir)
}

// stopStaleNginx ends the nginx of an interrupted bench whose temp dir is dir, found by
// the pid file there and checked by its command line.
func stopStaleNginx(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "nginx.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), dir) {
		return
	}
	progress("cleanup: stopping the nginx (pid %d) of an interrupted bench", pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for range 50 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}
