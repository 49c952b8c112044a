#!/bin/sh
# Media hook of the device's UAS scenario (uas.xml), run by SIPp's <exec command=...>.
# SIPp runs it in a double-forked child, so it never blocks the SIP side.
#
#   sh send.sh start CALL CHANNEL IP PORT SSRC PROTO   on ACK: send CHANNEL's PS file as RTP
#   sh send.sh stop CALL                              on BYE: stop that call's sender
#
# CALL is SIPp's call number (unique within one UAS run); every other argument was matched
# by a digits-and-dots regular expression in uas.xml, so nothing from the wire reaches the
# shell unchecked. The environment comes from device.py through SIPp:
#   GB_PEER_DIR     the device's work directory: channels/CHANNEL.ps (its files),
#                   senders/CALL.{pid,stop,json}, media.log, mute (exists: send nothing),
#                   uas.pid (the SIPp UAS; senders stop when it is gone)
#   GB_PEER_PYTHON  the Python that runs tests.peers.gb28181.media (PYTHONPATH: the repo)
#   GB_PEER_LOOP    1: loop the file; GB_PEER_MAX_S: a sender's longest life in seconds
set -u
dir=$GB_PEER_DIR
action=$1
call=$2
senders=$dir/senders
log() { echo "$(date +%s.%N) $*" >>"$dir/media.log"; }

case $action in
start)
    channel=$3 ip=$4 port=$5 ssrc=$6 proto=$7
    file=$dir/channels/$channel.ps
    if [ -e "$dir/mute" ]; then
        log "mute call=$call channel=$channel"
        exit 0
    fi
    if [ ! -e "$file" ] || [ -z "$ip" ] || [ -z "$port" ] || [ -z "$ssrc" ]; then
        log "nomedia call=$call channel=$channel ip=$ip port=$port ssrc=$ssrc"
        exit 0
    fi
    set -- --file "$file" --host "$ip" --port "$port" --ssrc "$ssrc" \
        --stop-file "$senders/$call.stop" --stats-file "$senders/$call.json" \
        --pid-file "$senders/$call.pid" \
        --max-seconds "${GB_PEER_MAX_S:-600}"
    if [ "$proto" = "TCP/RTP/AVP" ]; then set -- "$@" --tcp; fi
    if [ "${GB_PEER_LOOP:-1}" = 1 ]; then set -- "$@" --loop; fi
    if [ -s "$dir/uas.pid" ]; then set -- "$@" --watch-pid "$(cat "$dir/uas.pid")"; fi
    echo $$ >"$senders/$call.pid"
    log "start call=$call channel=$channel ip=$ip port=$port ssrc=$ssrc proto=$proto pid=$$"
    # exec: the sender keeps this shell's PID, the one just written down.
    exec "$GB_PEER_PYTHON" -m tests.peers.gb28181.media send "$@" 2>>"$dir/media.log"
    ;;
stop)
    # The stop file also covers a BYE that overtakes the start (the sender checks it).
    : >"$senders/$call.stop"
    # The sender removes its PID file when it ends, so a stale PID is not signalled.
    if [ -s "$senders/$call.pid" ]; then
        kill -TERM "$(cat "$senders/$call.pid")" 2>/dev/null
    fi
    log "stop call=$call"
    ;;
*)
    log "unknown action $action"
    exit 2
    ;;
esac
