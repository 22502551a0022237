"""Taking work from this machine to a Ray cluster: runtime environments with the shell's secrets."""
