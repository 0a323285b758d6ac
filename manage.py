#!/usr/bin/env python
"""Django's command-line utility for maskloop."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from engine.sam.malloc import tune_malloc

    tune_malloc()  # torch on the CPU: keep freed tensor blocks for reuse (engine/sam/malloc.py)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
