# `cmake --install BUILD [--prefix DIR]`: the libraries, headers, command line, configs and docs in
# the GNU places, with a CMake package (find_package(spe) gives the target spe::spe) and a
# pkg-config file (pkg-config --cflags --libs spe).
include(CMakePackageConfigHelpers)

set(SPE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/spe)
# Installed binaries find libspe beside them (libraries) or in ../LIBDIR (the command line);
# LibTorch sits in the system's library directories.
set_target_properties(spe spe_torch_ops PROPERTIES INSTALL_RPATH "$ORIGIN")
install(TARGETS spe EXPORT speTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The ops for Python (torch.ops.load_library), not linked by C++ users.
install(TARGETS spe_torch_ops LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/spe DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(SPE_BUILD_CLI)
  set_target_properties(spe_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
  install(TARGETS spe_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(DIRECTORY configs DESTINATION ${CMAKE_INSTALL_DATADIR}/spe)
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

install(EXPORT speTargets NAMESPACE spe:: DESTINATION ${SPE_CMAKE_DIR})
configure_package_config_file(cmake/speConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/speConfig.cmake
                              INSTALL_DESTINATION ${SPE_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/speConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/speConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/speConfigVersion.cmake
        DESTINATION ${SPE_CMAKE_DIR})

# pkg-config: LibTorch ships no .pc file, so its flags are spelled out from its CMake package.
list(TRANSFORM TORCH_INCLUDE_DIRS PREPEND "-I" OUTPUT_VARIABLE spe_pc_torch_cflags)
list(JOIN spe_pc_torch_cflags " " SPE_PC_TORCH_CFLAGS)
get_filename_component(SPE_PC_TORCH_LIBDIR ${TORCH_LIBRARY} DIRECTORY)
# Relocatable: the prefix is found from the .pc file's own place, whatever --prefix was given.
file(RELATIVE_PATH SPE_PC_PREFIX_FROM_PCFILEDIR /p/${CMAKE_INSTALL_LIBDIR}/pkgconfig /p)
configure_file(cmake/spe.pc.in ${CMAKE_CURRENT_BINARY_DIR}/spe.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/spe.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
