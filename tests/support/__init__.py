"""Helpers shared by the test folders, in plain modules (conftests keep only fixtures):
media (the sample photo, speech-like tones, WAV files), waits, free ports, and a
virtual-time event loop for timing logic."""
