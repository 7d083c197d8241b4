"""Run and experiment specs: what changes the science, run ids, TOML experiments, CLI overrides, name grammars."""
