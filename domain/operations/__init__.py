"""What the system keeps about its own operation (dead letters), in the stores of the
services it concerns."""
