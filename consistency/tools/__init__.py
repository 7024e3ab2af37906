"""Tools above the run: teacher inversion, the method benchmark and comparison, recipe scaling, EDM checkpoint
import, throughput measurement."""
