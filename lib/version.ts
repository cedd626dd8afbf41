/**
 * This copy's version (kept equal to package.json's by a test). An app can load the kit twice (its
 * CommonJS and ESM builds, or two versions under different dependencies): objects the copies hand
 * each other are recognised by a `Symbol.for` brand carrying it, and only the same version's are used.
 */
export const KIT_VERSION = '0.1.0';
