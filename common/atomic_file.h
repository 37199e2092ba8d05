// atomic_file.h: whole-file writes that are all-or-nothing. The bytes go to a
// temporary file in the target's directory, are fsync'ed, then rename()d over
// the target and the directory is fsync'ed, so a reader (or a crash, SIGINT,
// full disk) sees either the old file or the new one, never a torn one.
// Everything that writes a results file, report or trace goes through here.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace moebench {

// Replaces `path` with `bytes` atomically. Throws Error naming the path and the
// failing step (open, write, fsync, rename) with strerror; on failure the
// temporary file is removed and any previous `path` is left untouched.
void write_file_atomic(const std::string& path, std::string_view bytes);

// One file argument of a command: the flag (or positional name) that gave it, and the path.
struct PathArg {
  std::string flag;
  std::string path;
};

// Checks a command's file arguments before it does any work, so that a mistake is
// found before a long run and never destroys a file. Fails with one line naming the
// flag and path when an input does not exist, is a folder or cannot be read (a command
// that would not read it, such as bench's --tokenizer with token-count prompts, still
// refuses it), an output's folder is missing or not writable, an output exists
// but is not a regular file, or two arguments name the same file (two outputs, or an
// output and an input; compared by canonical path, and by inode when both exist).
// Empty paths are skipped.
void check_paths(const std::vector<PathArg>& inputs, const std::vector<PathArg>& outputs);

// Reads a whole file; throws Error "PATH: cannot read: <strerror>".
std::string read_file(const std::string& path);

}  // namespace moebench
