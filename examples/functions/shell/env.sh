#!/bin/sh
# Prints the CGI environment the function was started with, sorted.
printf 'Content-Type: text/plain\n\n'
env | sort
