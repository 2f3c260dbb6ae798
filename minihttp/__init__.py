"""minihttp: a small, strict HTTP/1.1 server that makes message framing visible.

The modules follow chapter 5 of Foundations of Python Network Programming,
lowest layer first:

    limits     every limit and default, each saying what it protects
    framing    the framing core: exact reads, streamed exact reads, delimiter reads
    blocks     Listing 5-2's length-prefixed blocks, on the framing core
    listener   listening sockets, a thread per connection, a clean stop
    cli        the command line
"""

__version__ = '0.1.0'
