"""Where a node's files go on the target system (standard library only)."""

CONFIG_DIR = "/etc/meshd"
CONFIG_FILE = f"{CONFIG_DIR}/meshd.toml"
STATE_DIR = "/var/lib/meshd"
VENV = "/opt/meshd/venv"
# What `meshd update` keeps beside it (meshd.adapters.installs): a virtual environment per
# release taken (VENV then links to one), its record and its lock.
UPDATES = ("/opt/meshd/versions", "/opt/meshd/update.json", "/opt/meshd/update.lock")
UNIT_FILE = "/etc/systemd/system/meshd.service"
SYSCTL_FILE = "/etc/sysctl.d/90-meshd.conf"
TMPFILES_FILE = "/etc/tmpfiles.d/meshd.conf"
MODULES_FILE = "/etc/modules-load.d/meshd.conf"
USER = "meshd"
SERVICE = "meshd.service"
# `meshd update auto`, as root, now and then: a release this node's stage takes, a trial a
# reboot cut short (meshd.core.updates).
UPDATE_SERVICE_FILE = "/etc/systemd/system/meshd-update.service"
UPDATE_TIMER_FILE = "/etc/systemd/system/meshd-update.timer"
UPDATE_TIMER = "meshd-update.timer"
