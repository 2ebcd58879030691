/**
 * A suite's temporary folder, and a writer of files into it (configurations, messages, request lists).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** A fresh folder under the system's temporary one, named after the suite; `file` writes one and gives its path. */
export const tempFiles = (suite: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `smtp-transport-${suite}-`))
  const file = (name: string, content: string): string => {
    const p = path.join(dir, name)
    fs.writeFileSync(p, content)
    return p
  }
  return { dir, file }
}
