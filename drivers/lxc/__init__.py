"""The lxc execution driver."""
