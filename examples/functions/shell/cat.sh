#!/bin/sh
# Echoes the request body back unchanged: a raw (non-CGI) function, no header.
exec cat
