#!/bin/sh
# Streams three ticks a second apart, to show that output reaches the client
# as it is written, not when the container exits.
printf 'Content-Type: text/plain\n\n'
echo "tick 1"
sleep 1
echo "tick 2"
sleep 1
echo "tick 3"
