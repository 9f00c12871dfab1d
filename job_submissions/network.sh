# Sourced by local/launch.sh and slurm/common.sh, after they define die; not a launcher itself.
# The network settings both launchers share:
#   net_keepalive            Open MPI's out-of-band keepalive (a cut link ends the job in bounded time)
#   net_use_iface NAME       every collective over interface NAME (MEDIMG_IFACE)
#   net_iface_missing HOSTS HINT   the one line naming the hosts a check found without it

# Open MPI notices a daemon it cannot reach (a cut link) after keepalive_time + probes x intvl
# seconds of silence, not its default 480 s; set these to override.
net_keepalive() {
  export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-60} \
    OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-10} \
    OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-3}
}

net_use_iface() {  # Open MPI's btl and oob TCP, Gloo (Horovod's and its own) and NCCL: one interface
  [[ "$1" =~ ^[A-Za-z0-9_.:@-]+$ ]] || die "MEDIMG_IFACE '$1' is not an interface name (e.g. eth0, ib0)"
  export OMPI_MCA_btl_tcp_if_include=$1 OMPI_MCA_oob_tcp_if_include=$1 HOROVOD_GLOO_IFACE=$1 \
    GLOO_SOCKET_IFNAME=$1 NCCL_SOCKET_IFNAME=$1
}

net_iface_missing() {  # net_iface_missing "HOST..." HINT
  # shellcheck disable=SC2206  # a space-separated list of host names
  local hosts=($1)
  if [ "${#hosts[@]}" -eq 1 ]; then
    die "MEDIMG_IFACE=$MEDIMG_IFACE: host $1 has no interface $MEDIMG_IFACE ($2)"
  fi
  die "MEDIMG_IFACE=$MEDIMG_IFACE: hosts ${hosts[*]} have no interface $MEDIMG_IFACE ($2)"
}
