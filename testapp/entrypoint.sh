#!/bin/sh
# PID 1 of orchestry-testapp. A scratch image has no init, so this shell is the init: it starts the server
# in the background, waits for it, and on SIGTERM/SIGINT kills it and exits 0 at once (in-flight handlers
# die with the container's PID namespace).
#
# The server is busybox `nc -ll... -e`: it accepts connections forever and forks /app/handler.sh for each,
# with the socket as stdin and stdout (the Debian busybox has no tcpsvd). The listen backlog of busybox nc
# is the number of `l`s, so 64 of them give a backlog of 64 instead of 1.

trap 'kill $server $delay 2>/dev/null; exit 0' TERM INT

PORT=${PORT:-8080}
export PORT

# Fresh health state on every (re)start; HEALTH_DELAY seconds (fractions allowed) of 503 first.
rm -f /tmp/health-failing /tmp/health-ready
case ${HEALTH_DELAY:-0} in
    0 | 0.0 | '') : >/tmp/health-ready ;;
    *) (sleep "$HEALTH_DELAY" && : >/tmp/health-ready) & delay=$! ;;
esac

nc -llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll -p "$PORT" -e /app/handler.sh &
server=$!
echo "orchestry-testapp listening on port $PORT" >&2

wait $server
status=$?
echo "orchestry-testapp: server exited with status $status" >&2
exit $status
