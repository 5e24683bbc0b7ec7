"""What the receiver and the consumers share.

The bus contract (names, messages, the receiver's topology), the envelope, errors,
broker URLs and their connections, settings readers, back-off, supervision of
background tasks, and the publish-blocking hooks. It uses nothing else of `service`.
"""
