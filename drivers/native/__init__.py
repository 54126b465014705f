"""The native execution driver."""
