#!/bin/sh
exec qemu-system-x86_64 -machine q35,cxl=on \
  -m 2G,maxmem=8G,slots=4 -nographic
