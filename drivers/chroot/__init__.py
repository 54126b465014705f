"""The chroot execution driver."""
