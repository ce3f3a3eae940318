//! Refuses compiled chunks that declare to-be-closed variables (`<close>`).
//!
//! When the budget's hook interrupts a coroutine with an error that no `pcall`
//! of that coroutine catches, Lua leaves the coroutine with hooks switched off;
//! the `__close` handlers that closing it then runs could loop for ever where
//! nothing can interrupt them. So no agent code may use `<close>`: every chunk
//! (role script, `require`d module, `load`ed text) is checked after it compiles
//! by looking for the `TBC` instruction in the stripped bytecode of each of its
//! functions.

use mlua::Function;

/// `OP_TBC` in Lua 5.4's `lopcodes.h`.
const OP_TBC: u32 = 55;
/// Header of a Lua 5.4 binary chunk: signature, version, format, LUAC_DATA,
/// three sizes, LUAC_INT and LUAC_NUM.
const HEADER_BYTES: usize = 4 + 1 + 1 + 6 + 3 + 8 + 8;

/// Fails with a message naming `chunk` when `f` (or a function inside it)
/// declares a to-be-closed variable.
pub fn check_no_close(f: &Function, chunk: &str) -> mlua::Result<()> {
    let code = f.dump(true);
    let mut reader = Reader {
        bytes: &code,
        at: HEADER_BYTES + 1, // the header, then the number of upvalues
    };
    match reader.function() {
        Some(false) => Ok(()),
        Some(true) => Err(mlua::Error::runtime(format!(
            "{chunk}: to-be-closed variables (<close>) are not available to agents \
             (the host could not interrupt their __close handlers)"
        ))),
        None => Err(mlua::Error::runtime(format!(
            "{chunk}: cannot inspect the compiled chunk (unexpected bytecode layout)"
        ))),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self.at.checked_add(n)?;
        (self.at <= self.bytes.len()).then_some(())
    }

    /// `dumpSize`: 7 bits a byte, most significant first, the last byte marked.
    fn size(&mut self) -> Option<usize> {
        let mut x: usize = 0;
        loop {
            let b = self.byte()?;
            x = x.checked_mul(128)? | (b & 0x7f) as usize;
            if b & 0x80 != 0 {
                return Some(x);
            }
        }
    }

    fn string(&mut self) -> Option<()> {
        match self.size()? {
            0 => Some(()),
            n => self.skip(n - 1),
        }
    }

    /// Reads one function (`dumpFunction`); true when it or a nested one has `OP_TBC`.
    fn function(&mut self) -> Option<bool> {
        self.string()?; // source
        self.size()?; // linedefined
        self.size()?; // lastlinedefined
        self.skip(3)?; // numparams, is_vararg, maxstacksize
        let n = self.size()?;
        let code = self
            .bytes
            .get(self.at..self.at.checked_add(n.checked_mul(4)?)?)?;
        let mut found = code
            .chunks_exact(4)
            .any(|i| u32::from_ne_bytes([i[0], i[1], i[2], i[3]]) & 0x7f == OP_TBC);
        self.skip(n * 4)?;
        for _ in 0..self.size()? {
            match self.byte()? {
                0x03 | 0x13 => self.skip(8)?,  // integer, float
                0x04 | 0x14 => self.string()?, // short, long string
                _ => {}                        // nil, false, true
            }
        }
        let upvalues = self.size()?;
        self.skip(upvalues.checked_mul(3)?)?;
        for _ in 0..self.size()? {
            found |= self.function()?;
        }
        for _ in 0..4 {
            // stripped debug info: four empty vectors
            if self.size()? != 0 {
                return None;
            }
        }
        Some(found)
    }
}
