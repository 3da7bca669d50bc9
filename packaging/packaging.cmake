# SPDX-License-Identifier: Apache-2.0
# Debian package of the three programs (`cd build && cpack -G DEB`). The donor's daemon mode,
# service units and resource settings belong to issue #5 and will be added here.
set(CPACK_PACKAGE_NAME "ubcp")
set(CPACK_PACKAGE_VENDOR "UBCP")
set(CPACK_PACKAGE_CONTACT "UBCP maintainers <maintainers@ubcp.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Universal Basic Computing Power: volunteer compute for AI training (coordinator, donor client, CLI)")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "science")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libopenblas0-openmp")
include(CPack)
