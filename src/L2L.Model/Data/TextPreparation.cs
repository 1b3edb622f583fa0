// Turns UTF-8 text files into llm.c train/val token files, streaming, with the ids of tokenizing each document whole.
using System.Buffers.Binary;
using System.Text;
using L2L.Model.Tokenizers;

namespace L2L.Model.Data;

/// <summary>What <see cref="TextPreparation.Prepare"/> wrote.</summary>
/// <param name="TrainPath">The training token file.</param>
/// <param name="ValPath">The validation token file, or null when the validation fraction is 0.</param>
/// <param name="TrainTokens">Tokens in <paramref name="TrainPath"/>.</param>
/// <param name="ValTokens">Tokens in <paramref name="ValPath"/>.</param>
/// <param name="DocumentTokens">Tokens of each input document, end-of-text separators not counted.</param>
/// <param name="PeakBufferedChars">The most characters held in memory at once (bounded by block + window, whatever the input size).</param>
public sealed record PrepareResult(string TrainPath, string? ValPath, long TrainTokens, long ValTokens,
    IReadOnlyList<long> DocumentTokens, int PeakBufferedChars);

/// <summary>
/// Prepares text for training. Each input file is one document; documents are joined with the tokenizer's
/// end-of-text id between them; the last <c>valFraction</c> of the tokens go to <c>val.bin</c>, the rest to
/// <c>train.bin</c> (llm.c format). Files are read in blocks and tokenized only up to the last point where the
/// tokenizer's own pre-tokenization splits whatever follows (<see cref="ITextTokenizer.LastSafeSplit"/>), so the ids
/// equal those of tokenizing each document whole while memory stays bounded. Output goes to temporary files that
/// are renamed into place only when every input has been read: a bad input leaves nothing behind.
/// </summary>
public static class TextPreparation
{
    /// <summary>The training file's name in the output directory.</summary>
    public const string TrainFile = "train.bin";

    /// <summary>The validation file's name in the output directory.</summary>
    public const string ValFile = "val.bin";

    /// <summary>Characters read from a file at a time.</summary>
    public const int DefaultBlockChars = 1 << 16;

    /// <summary>The longest stretch of text without a split point that is held before giving up (1 Mi characters).</summary>
    public const int DefaultWindowChars = 1 << 20;

    /// <summary>Tokenizes <paramref name="inputs"/> into <paramref name="outDir"/>/train.bin and val.bin.</summary>
    /// <exception cref="FileNotFoundException">An input is missing.</exception>
    /// <exception cref="InvalidDataException">An input is empty, binary, not UTF-8, or too short to split.</exception>
    /// <exception cref="ArgumentException">Bad arguments.</exception>
    public static PrepareResult Prepare(IReadOnlyList<string> inputs, ITextTokenizer tokenizer, string outDir, double valFraction = 0.05,
        int blockChars = DefaultBlockChars, int windowChars = DefaultWindowChars)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (inputs.Count == 0) throw new ArgumentException("Give at least one input text file.");
        if (!(valFraction >= 0 && valFraction < 1))
            throw new ArgumentException($"--val-fraction must be in [0, 1), got {valFraction}.");
        if (tokenizer.VocabSize > 1 << 16)
            throw new ArgumentException($"The llm.c format stores uint16 ids; the {tokenizer.Name} tokenizer's vocabulary of {tokenizer.VocabSize} does not fit.");
        ArgumentOutOfRangeException.ThrowIfLessThan(blockChars, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(windowChars, 1);
        foreach (var input in inputs)
        {
            if (Directory.Exists(input)) throw new InvalidDataException($"Input '{input}' is a directory; give the text files in it.");
            if (!File.Exists(input)) throw new FileNotFoundException($"Input file '{input}' not found.", input);
            if (new FileInfo(input).Length == 0) throw new InvalidDataException($"Input file '{input}' is empty.");
        }
        if (File.Exists(outDir)) throw new IOException($"Output '{outDir}' is a file; give a directory for {TrainFile} and {ValFile}.");

        var createdDir = !Directory.Exists(outDir);
        Directory.CreateDirectory(outDir);
        var id = Guid.NewGuid().ToString("N");
        var allTemp = Path.Combine(outDir, $".{TrainFile}.{id}.tmp");
        var valTemp = Path.Combine(outDir, $".{ValFile}.{id}.tmp");
        try
        {
            var documentTokens = new List<long>();
            long total;
            int peak;
            using (var output = new TokenWriter(allTemp))
            {
                peak = 0;
                for (var d = 0; d < inputs.Count; d++)
                {
                    if (d > 0) output.Write(tokenizer.EndOfTextId);
                    var before = output.Count;
                    peak = Math.Max(peak, TokenizeFile(inputs[d], tokenizer, output, blockChars, windowChars));
                    documentTokens.Add(output.Count - before);
                }
                total = output.Count;
            }
            if (total > int.MaxValue) throw new InvalidDataException($"{total} tokens exceed the llm.c format's limit of {int.MaxValue} per file; prepare fewer inputs at a time.");
            var valTokens = valFraction > 0 ? (long)Math.Ceiling(total * valFraction) : 0;
            var trainTokens = total - valTokens;
            if (trainTokens < 1 || (valFraction > 0 && valTokens < 1))
                throw new InvalidDataException($"The inputs hold only {total} tokens, too few to split into training and validation data at --val-fraction {valFraction}.");
            if (valTokens > 0) SplitTail(allTemp, valTemp, trainTokens, valTokens);

            var trainPath = Path.Combine(outDir, TrainFile);
            var valPath = Path.Combine(outDir, ValFile);
            File.Move(allTemp, trainPath, overwrite: true);
            if (valTokens > 0) File.Move(valTemp, valPath, overwrite: true);
            else if (File.Exists(valPath)) File.Delete(valPath); // a stale split would not match the new training data
            TextTokenizers.WriteRecord(outDir, tokenizer);
            return new PrepareResult(trainPath, valTokens > 0 ? valPath : null, trainTokens, valTokens, documentTokens, peak);
        }
        catch
        {
            TryDelete(allTemp);
            TryDelete(valTemp);
            if (createdDir && Directory.Exists(outDir) && !Directory.EnumerateFileSystemEntries(outDir).Any())
                Directory.Delete(outDir);
            throw;
        }
    }

    // Returns the most characters held at once.
    private static int TokenizeFile(string path, ITextTokenizer tokenizer, TokenWriter output, int blockChars, int windowChars)
    {
        var encoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        using var reader = new StreamReader(stream, encoding, detectEncodingFromByteOrderMarks: false, bufferSize: 1 << 16);
        var pending = new char[windowChars + blockChars];
        var length = 0;
        var peak = 0;
        var first = true;
        while (true)
        {
            int read;
            try
            {
                read = reader.Read(pending, length, blockChars);
            }
            catch (DecoderFallbackException)
            {
                throw new InvalidDataException($"Input file '{path}' is not UTF-8 text (an invalid byte sequence before byte {stream.Position}): a binary file, or text in another encoding; convert it to UTF-8 first.");
            }
            if (first && read > 0 && pending[0] == '\uFEFF')
            {
                // A byte-order mark is not text.
                Array.Copy(pending, 1, pending, 0, read - 1);
                read--;
            }
            first = false;
            var nul = pending.AsSpan(length, read).IndexOf('\0');
            if (nul >= 0)
                throw new InvalidDataException($"Input file '{path}' contains NUL bytes: it looks binary (or UTF-16); l2l prepare reads UTF-8 text.");
            length += read;
            peak = Math.Max(peak, length);
            if (read == 0)
            {
                if (length > 0) output.Write(tokenizer.Encode(new string(pending, 0, length)));
                return peak;
            }
            var cut = tokenizer.LastSafeSplit(pending.AsSpan(0, length));
            if (cut == 0)
            {
                if (length >= windowChars)
                    throw new InvalidDataException($"Input file '{path}' has {length} characters without a point where the {tokenizer.Name} tokenizer splits (no whitespace); it does not look like text.");
                continue;
            }
            output.Write(tokenizer.Encode(new string(pending, 0, cut)));
            Array.Copy(pending, cut, pending, 0, length - cut);
            length -= cut;
        }
    }

    // Moves the last valTokens tokens of the combined file into their own file; both get correct headers.
    private static void SplitTail(string allPath, string valPath, long trainTokens, long valTokens)
    {
        using var all = new FileStream(allPath, FileMode.Open, FileAccess.ReadWrite, FileShare.None, 1 << 16);
        using (var val = new FileStream(valPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
        {
            val.Write(Header(valTokens));
            all.Position = TokenData.HeaderBytes + 2 * trainTokens;
            all.CopyTo(val, 1 << 20);
            val.Flush(flushToDisk: true);
        }
        all.SetLength(TokenData.HeaderBytes + 2 * trainTokens);
        all.Position = 0;
        all.Write(Header(trainTokens));
        all.Flush(flushToDisk: true);
    }

    internal static byte[] Header(long count)
    {
        var header = new byte[TokenData.HeaderBytes];
        BinaryPrimitives.WriteInt32LittleEndian(header, TokenData.Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(4), TokenData.Version);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), (int)Math.Min(count, int.MaxValue));
        return header;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    // Appends uint16 ids after a header that is filled in on dispose.
    private sealed class TokenWriter : IDisposable
    {
        private readonly FileStream _stream;
        private readonly byte[] _buffer = new byte[1 << 16];
        private int _used;

        public TokenWriter(string path)
        {
            _stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
            _stream.Write(new byte[TokenData.HeaderBytes]);
        }

        public long Count { get; private set; }

        public void Write(int id)
        {
            if (_used == _buffer.Length) Flush();
            BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(_used), checked((ushort)id));
            _used += 2;
            Count++;
        }

        public void Write(IReadOnlyList<int> ids)
        {
            for (var i = 0; i < ids.Count; i++) Write(ids[i]);
        }

        private void Flush()
        {
            _stream.Write(_buffer, 0, _used);
            _used = 0;
        }

        public void Dispose()
        {
            Flush();
            _stream.Position = 0;
            _stream.Write(Header(Count));
            _stream.Flush(flushToDisk: true);
            _stream.Dispose();
        }
    }
}
