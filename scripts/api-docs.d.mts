/**
 * Runs @effect/docgen over the public modules of the project at `root` and returns the pages of docs/api, by file
 * name: `<Module>.md` for each module and `README.md`, the index.
 */
export declare const renderApiPages: (root: string) => Promise<Record<string, string>>
