"""The fleet: staged rollouts (`rollout`), the OTA server, the device agent and the simulator."""
