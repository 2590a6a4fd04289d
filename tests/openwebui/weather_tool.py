"""
title: Leafresh test tools
description: A workspace tool for scripts/test-openwebui: Open WebUI passes its spec to /v1 as `tools`.
version: 0.1.0
"""


class Tools:
    def __init__(self):
        pass

    def get_weather(self, city: str) -> str:
        """
        Get the current weather of a city.
        :param city: The city's name, for example Seoul.
        """
        return f"Sunny, 21 degrees Celsius in {city}."
