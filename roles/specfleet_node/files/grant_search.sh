#!/bin/sh
# grant_search.sh WORK_ROOT AGENT_USER [--check]
# Give AGENT_USER search permission (x, never read) on each folder above WORK_ROOT it cannot
# pass yet, with a POSIX ACL entry for that user alone; prints "granted DIR" per change.
set -eu
root=$1 user=$2 check=${3:-}
group=$(id -gn "$user")
dir=$(dirname "$root")
while [ "$dir" != / ]; do
    if [ -d "$dir" ] && ! setpriv --reuid="$user" --regid="$group" --clear-groups test -x "$dir"; then
        if [ "$check" != --check ]; then
            setfacl -m "u:$user:x" "$dir"
        fi
        echo "granted $dir"
    fi
    dir=$(dirname "$dir")
done
