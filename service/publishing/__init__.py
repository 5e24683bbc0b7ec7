"""Confirmed publishing to RabbitMQ: the supervised publisher, its confirm channel, the frames.

`confirm_channel` is one of the two modules that reach into a library's private
interface (aiormq's); see its docstring.
"""
