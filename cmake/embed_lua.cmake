# embed_lua.cmake: turn src/store/lua/*.lua into C strings at build time.
#   cmake -DOUT=file.c -DSOURCES="a.lua|b.lua" -P embed_lua.cmake
# Each file NAME.lua becomes `const char store_lua_NAME[]`, byte for byte.
set(text "/* Generated from the files in src/store/lua by cmake/embed_lua.cmake: do not edit. */\n")
string(REPLACE "|" ";" SOURCES "${SOURCES}")
foreach(src IN LISTS SOURCES)
  get_filename_component(name "${src}" NAME_WE)
  file(READ "${src}" hex HEX)
  string(LENGTH "${hex}" n)
  # Hex bytes as a char array initializer: no escaping rules to get wrong.
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND text "const char store_lua_${name}[] = {${bytes}0x00};\n")
endforeach()
file(WRITE "${OUT}.tmp" "${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
