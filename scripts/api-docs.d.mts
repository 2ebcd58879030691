/**
 * Runs @effect/docgen over the public modules of the project at `root` and returns the pages of docs/api, by file
 * name: `<Module>.md` for each module and `README.md`, the index.
 */
export declare const renderApiPages: (root: string) => Promise<Record<string, string>>

/** The file in docs/api where `npm run docs` records what the pages were generated from (not a page). */
export declare const recordFile: string

/** A digest of everything docgen's output and its examples' outcome depend on, in the project at `root`. */
export declare const inputsDigest: (root: string) => string

/** A digest of a set of pages, by file name. */
export declare const pagesDigest: (pages: Readonly<Record<string, string>>) => string

/** The record `npm run docs` writes beside the pages it wrote. */
export declare const record: (inputs: string, pages: Readonly<Record<string, string>>) => string
