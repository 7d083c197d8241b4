"""Judging measures: runs as rows, the statistics, verdicts and paper comparisons. numpy and scipy only, no torch."""
