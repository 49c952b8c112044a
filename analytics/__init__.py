"""Frame analytics: motion, persons and crowds, zones, incident rules.

Pure numpy/cv2/stdlib code on frames and timestamps handed in: no I/O, no threads, no clock
of its own. May import: ``config``.
"""
