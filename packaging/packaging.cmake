# SPDX-License-Identifier: Apache-2.0
# Debian packages (`cd build && cpack -G DEB`), one per install component:
#   ubcp-client       ubcp-client + ubcp, /etc/ubcp/client.conf, ubcp-client.service
#   ubcp-coordinator  ubcp-coordinator, /etc/ubcp/coordinator.conf, ubcp-coordinator.service
# Each has its own system user and state directory (docs/PACKAGING.md says why).

# Config files and units. Absolute destinations: Debian puts them there whatever the prefix.
install(FILES ${CMAKE_CURRENT_LIST_DIR}/config/client.conf DESTINATION /etc/ubcp COMPONENT client)
install(FILES ${CMAKE_CURRENT_LIST_DIR}/systemd/ubcp-client.service
        DESTINATION /lib/systemd/system COMPONENT client)
install(FILES ${CMAKE_CURRENT_LIST_DIR}/config/coordinator.conf
        DESTINATION /etc/ubcp COMPONENT coordinator)
install(FILES ${CMAKE_CURRENT_LIST_DIR}/systemd/ubcp-coordinator.service
        DESTINATION /lib/systemd/system COMPONENT coordinator)

# Maintainer scripts (postinst, prerm, postrm) and the conffiles list of one component, from the
# templates in debian/. Sets ubcp_control_<component> to the files for CONTROL_EXTRA.
function(ubcp_debian_control component role)
  set(UBCP_PACKAGE ubcp-${component})
  set(UBCP_USER ubcp-${component})
  set(UBCP_ROLE ${role})
  set(UBCP_STATE_DIR /var/lib/ubcp-${component})
  set(UBCP_UNIT ubcp-${component}.service)
  set(dir ${CMAKE_BINARY_DIR}/packaging/debian/${component})
  foreach(script postinst prerm postrm)
    configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/${script}.in ${dir}/${script} @ONLY
                   FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                   GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
  # dpkg keeps an administrator's edits of a conffile across upgrades and removes it on purge.
  file(WRITE ${dir}/conffiles "/etc/ubcp/${component}.conf\n")
  set(ubcp_control_${component} ${dir}/postinst ${dir}/prerm ${dir}/postrm ${dir}/conffiles
      PARENT_SCOPE)
endfunction()
ubcp_debian_control(client "donor client")
ubcp_debian_control(coordinator "coordinator")

set(CPACK_PACKAGE_NAME "ubcp")
set(CPACK_PACKAGE_VENDOR "UBCP")
set(CPACK_PACKAGE_CONTACT "UBCP maintainers <maintainers@ubcp.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Universal Basic Computing Power: volunteer compute for AI training")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL client coordinator)
# The summary line is the project's (CPack DEB has no per-component summary); these follow it.
set(CPACK_COMPONENT_CLIENT_DESCRIPTION
    "The donor's daemon (ubcp-client) runs signed training and evaluation work units for a UBCP coordinator at low priority; ubcp is the command line of recipients and admins.")
set(CPACK_COMPONENT_COORDINATOR_DESCRIPTION
    "The coordinator: hands out signed work units to donors, aggregates their updates and keeps the credit ledger.")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "science")
# Library dependencies come from dpkg-shlibdeps; libtorch loads OpenBLAS at run time and the
# maintainer scripts use useradd/userdel (passwd).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libopenblas0-openmp, passwd")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_CLIENT_PACKAGE_CONTROL_EXTRA ${ubcp_control_client})
set(CPACK_DEBIAN_COORDINATOR_PACKAGE_CONTROL_EXTRA ${ubcp_control_coordinator})
include(CPack)
