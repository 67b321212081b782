"""The loops that keep moi's promises: the watchdog's pass (engines lost, directories swept,
retention, mail) and the embedded runtime's supervisor."""
