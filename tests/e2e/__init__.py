"""Real-browser tests: the platform started as ``make run`` does, driven with Playwright."""
