#!/usr/bin/env python3
"""Writes assets/ringtone.wav: the default ringtone of bevy_huddle_ui.

A North-American style ring: 440 Hz + 480 Hz for 0.8 s, then 0.4 s of silence, once
(the player loops it). 48 kHz, mono, 16-bit PCM, with 10 ms fades so it never clicks.
"""
import math
import struct
import wave

RATE = 48_000
ON, OFF, FADE = 0.8, 0.4, 0.010

samples = []
for i in range(int(RATE * (ON + OFF))):
    t = i / RATE
    if t >= ON:
        samples.append(0)
        continue
    envelope = min(1.0, t / FADE, (ON - t) / FADE)
    value = 0.25 * envelope * (math.sin(2 * math.pi * 440 * t) + math.sin(2 * math.pi * 480 * t))
    samples.append(int(value * 32767))

with wave.open("assets/ringtone.wav", "wb") as out:
    out.setnchannels(1)
    out.setsampwidth(2)
    out.setframerate(RATE)
    out.writeframes(struct.pack(f"<{len(samples)}h", *samples))
