# Sourced by the container scripts (tools.sh, build_image.sh, base/build.sh). A container may not
# raise an rlimit above this process's hard limit, so every build and run passes its ulimits
# explicitly, from these hard limits.
#
# cap_limit VALUE CAP: VALUE (as `ulimit -H...` prints it) no higher than CAP. `unlimited` is CAP:
# arithmetic on the word itself under `set -u` dies with "unlimited: unbound variable".
cap_limit() {
    if [[ $1 == unlimited ]] || (( $1 > $2 )); then
        echo "$2"
    else
        echo "$1"
    fi
}
