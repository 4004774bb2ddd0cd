#!/usr/bin/env bash
# Manual check (issue: supervision, case 6): the Docker daemon restarts while the runner
# runs. Expected: the runner's event stream reconnects, it re-observes its containers,
# restarts the ones that died with the daemon (live-restore off) or adopts the ones that
# live, and serves again — without a restart of the runner and without duplicates.
#
# Not part of `make test`: it restarts the host's dockerd, which other tests (and other
# users of the engine) share, and a second dockerd in a test would fight the first one
# over iptables chains. Run it by hand, as root, on a machine where that is fine:
#
#   bash integration/dockerd-restart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

make build images >/dev/null
dir=$(mktemp -d)
trap 'kill -TERM $runner_pid 2>/dev/null || true; wait $runner_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/plugins.hcl" <<HCL
runner {
  listen = "127.0.0.1:0"
}
plugin "hello" {
  image = "xcore-examples/hello:latest"
  port  = 8080
  supervisor {
    health { path = "/healthz" }
  }
}
plugin "slow" {
  image = "xcore-examples/slow:latest"
  port  = 8080
}
HCL

./bin/runner up -c "$dir/plugins.hcl" >"$dir/out" 2>"$dir/err" &
runner_pid=$!
for _ in $(seq 1 120); do grep -q '^serving' "$dir/out" 2>/dev/null && break; sleep 0.5; done
addr=$(sed -n 's|^serving http://\([0-9.:]*\)/.*|\1|p' "$dir/out")
[ -n "$addr" ] || { echo "runner did not start"; cat "$dir/err"; exit 1; }
id=$(cat "$dir/.runner/runner-id")
echo "runner serving on $addr (instance $id)"
curl -sf "http://$addr/plugins/hello/" >/dev/null

echo "restarting dockerd…"
if command -v systemctl >/dev/null && systemctl is-active --quiet docker 2>/dev/null; then
  systemctl restart docker
else
  pid=$(pidof dockerd)
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  (/usr/sbin/dockerd >/tmp/dockerd-restart.log 2>&1 &)
fi
restarted=$(date +%s.%N)
until docker info >/dev/null 2>&1; do sleep 0.2; done
echo "dockerd answers after $(echo "$(date +%s.%N) - $restarted" | bc) s"

for _ in $(seq 1 240); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/plugins/hello/" || true)
  [ "$code" = 200 ] && break
  sleep 0.25
done
[ "$code" = 200 ] || { echo "FAIL: hello not serving after the daemon restart (last $code)"; tail -30 "$dir/err"; exit 1; }
echo "hello serving again $(echo "$(date +%s.%N) - $restarted" | bc) s after the restart began"
curl -sf "http://$addr/plugins/slow/" >/dev/null || { echo "FAIL: slow not serving"; exit 1; }

for p in hello slow; do
  n=$(docker ps -q --filter "label=io.xcore.runner=$id" --filter "label=io.xcore.plugin=$p" | wc -l)
  [ "$n" = 1 ] || { echo "FAIL: $n running containers for $p, want 1"; docker ps -a --filter "label=io.xcore.runner=$id"; exit 1; }
done
grep -E 'restart|crash|event stream|reconnect|back' "$dir/err" | cut -c1-200 || true
kill -TERM $runner_pid; wait $runner_pid || true
left=$(docker ps -aq --filter "label=io.xcore.runner=$id" | wc -l)
[ "$left" = 0 ] || { echo "FAIL: $left containers left after SIGTERM"; exit 1; }
echo "PASS: the runner reconnected, restarted its plugins, no duplicates, clean exit"
