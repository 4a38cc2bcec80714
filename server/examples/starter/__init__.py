"""Example task modules shipped with taskhub; allowed to run by default (--allow-module starter)."""
