# The role's look at the host, read-only; run as: sh -c "$(cat probe.sh)" probe USER CRON_PATH
# SCRIPT REPO_DIR ANSIBLE_PLAYBOOK VAULT_PASSWORD_FILE PLAYBOOK... Prints key=value lines.
user=${1:-$(id -un)}
cron_path=$2
script=$3
repo=$4
ansible_playbook=$5
vault=$6
shift 6
group=$(id -gn -- "$user") || exit 1
echo "user=$user"
echo "group=$group"
echo "cron_path=$cron_path"
echo "crontab=$(command -v crontab)"
echo "logrotate=$(command -v logrotate)"
[ -d "$repo" ] || echo "problem=specfleet_schedule_repo_dir $repo is not a directory"
if [ ! -f "$ansible_playbook" ] || [ ! -x "$ansible_playbook" ]; then
    echo "problem=specfleet_schedule_ansible_playbook $ansible_playbook is not an executable file" \
        "(run scripts/setup.sh in the checkout, or set the variable)"
fi
[ -z "$vault" ] || [ -f "$vault" ] || echo "problem=specfleet_schedule_vault_password_file $vault does not exist"
for playbook do
    case $playbook in
        /*) path=$playbook ;;
        *) path=$repo/$playbook ;;
    esac
    [ -e "$path" ] || echo "missing=$playbook"
done
# The names of the entries installed before.
if [ -n "$cron_path" ]; then
    [ ! -e "$cron_path" ] || sed -n 's/^#Ansible: /installed=/p' "$cron_path"
elif [ "$user" = "$(id -un)" ]; then
    crontab -l 2>/dev/null | sed -n 's/^#Ansible: /installed=/p'
else
    crontab -l -u "$user" 2>/dev/null | sed -n 's/^#Ansible: /installed=/p'
fi
# The job script: absent, written by this role (it carries the marker) or someone else's.
if [ ! -e "$script" ]; then
    echo "script=absent"
elif [ -f "$script" ] && [ "$(sed -n 2p "$script")" = "# specfleet_schedule job script" ]; then
    echo "script=ours"
else
    echo "script=foreign"
fi
exit 0
