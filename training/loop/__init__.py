"""Framework-free training loop (issue 5). Depends on ``engine.sam``; imports no Django."""
