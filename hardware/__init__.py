"""Hardware data shipped with the package: device profiles (`hardware/profiles/*.yaml`).

A package only so the profiles travel in the wheel and are found with importlib.resources; the
firmware sketch and the Mosquitto files here stay in the repository.
"""
