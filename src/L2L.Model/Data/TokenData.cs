// Token files on disk: llm.c's .bin format (uint16 tokens after a 1 KiB header) and raw bytes.
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace L2L.Model.Data;

/// <summary>How a token file is to be read.</summary>
public enum TokenFileFormat
{
    /// <summary>By content and name: a <c>.bin</c> file must be an llm.c token file; any other file is one if it starts with the llm.c magic, else raw bytes.</summary>
    Auto,
    /// <summary>An llm.c token file; anything else is an error.</summary>
    Llmc,
    /// <summary>Raw bytes, one token per byte (vocabulary 256), whatever the name or the first bytes.</summary>
    Bytes,
}

/// <summary>Opens and writes token files.</summary>
public static class TokenData
{
    /// <summary>First int32 of an llm.c token file.</summary>
    public const int Magic = 20240520;

    /// <summary>The llm.c token file version with uint16 tokens (GPT-2 vocabulary).</summary>
    public const int Version = 1;

    /// <summary>llm.c header: 256 int32s.</summary>
    public const int HeaderBytes = 256 * sizeof(int);

    /// <summary>
    /// Opens an llm.c token file or a file of raw bytes (each byte one token; vocabulary 256), as
    /// <paramref name="format"/> says; with <see cref="TokenFileFormat.Auto"/> a name ending in <c>.bin</c>
    /// must be a valid llm.c file (a wrong magic number is an error, not raw bytes), and any other file
    /// is llm.c when it starts with the magic number and raw bytes otherwise. The file is memory-mapped; the returned
    /// source is <see cref="IDisposable"/> and unmaps it when disposed. Its
    /// <see cref="ITokenSource.VocabSize"/> is <paramref name="vocabSize"/> for <c>.bin</c> files and
    /// min(<paramref name="vocabSize"/>, 256) for raw bytes.
    /// </summary>
    /// <param name="path">File to read.</param>
    /// <param name="vocabSize">The model's vocabulary; every token id in the file must be below it.</param>
    /// <param name="format">How to read the file.</param>
    /// <exception cref="InvalidDataException">
    /// The file is empty, an llm.c file is expected and the magic number is wrong, its header's token
    /// count disagrees with its size, its version is not 1, or a token id is not below
    /// <paramref name="vocabSize"/> (the whole file is checked here, once).
    /// </exception>
    public static ITokenSource Open(string path, int vocabSize, TokenFileFormat format = TokenFileFormat.Auto)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        if (!File.Exists(path)) throw new FileNotFoundException($"Token file '{path}' not found.", path);
        var fileLength = new FileInfo(path).Length;
        if (fileLength == 0) throw new InvalidDataException($"Token file '{path}' is empty.");

        Span<byte> head = stackalloc byte[12];
        int headLength;
        using (var stream = File.OpenRead(path))
            headLength = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);

        var hasMagic = headLength >= 4 && BinaryPrimitives.ReadInt32LittleEndian(head) == Magic;
        if (format == TokenFileFormat.Auto)
            format = path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || hasMagic ? TokenFileFormat.Llmc : TokenFileFormat.Bytes;
        if (format == TokenFileFormat.Llmc && !hasMagic)
        {
            var found = headLength >= 4 ? $"its first int32 is {BinaryPrimitives.ReadInt32LittleEndian(head)}" : $"it has only {fileLength} bytes";
            throw new InvalidDataException(
                $"Token file '{path}' is not an llm.c token file: {found}, not the magic number {Magic}. " +
                "A .bin file must be an llm.c token file (256 int32 header, then uint16 tokens); to train on its raw bytes, pass --data-format bytes.");
        }
        if (format == TokenFileFormat.Llmc)
        {
            if (fileLength < HeaderBytes)
                throw new InvalidDataException($"Token file '{path}' is truncated: it starts with the llm.c magic {Magic} but has only {fileLength} bytes, less than the {HeaderBytes}-byte header.");
            var version = BinaryPrimitives.ReadInt32LittleEndian(head[4..]);
            if (version != Version)
                throw new InvalidDataException($"Token file '{path}' has llm.c version {version}; only version {Version} (uint16 GPT-2 tokens) is supported.");
            var count = BinaryPrimitives.ReadInt32LittleEndian(head[8..]);
            if (count <= 0)
                throw new InvalidDataException($"Token file '{path}' is empty: its header says {count} tokens.");
            var expectedBytes = HeaderBytes + 2L * count;
            if (fileLength < expectedBytes)
                throw new InvalidDataException($"Token file '{path}' is truncated: header says {count} tokens ({expectedBytes} bytes with the header), file has {fileLength} bytes.");
            if (fileLength > expectedBytes)
                throw new InvalidDataException($"Token file '{path}' is inconsistent: header says {count} tokens ({expectedBytes} bytes with the header), but the file has {fileLength} bytes.");
            return new MappedTokenFile(path, HeaderBytes, count, 2, vocabSize, $"llm.c tokens '{path}' ({count} tokens)");
        }
        return new MappedTokenFile(path, 0, fileLength, 1, Math.Min(vocabSize, 256), $"raw bytes '{path}' ({fileLength} bytes)");
    }

    /// <summary>Writes <paramref name="tokens"/> as an llm.c version-1 <c>.bin</c> file, atomically.</summary>
    public static void WriteBin(string path, ReadOnlySpan<ushort> tokens)
    {
        ArgumentNullException.ThrowIfNull(path);
        var bytes = new byte[HeaderBytes + 2L * tokens.Length];
        var header = bytes.AsSpan(0, HeaderBytes);
        BinaryPrimitives.WriteInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], tokens.Length);
        var body = bytes.AsSpan(HeaderBytes);
        for (var i = 0; i < tokens.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(body[(2 * i)..], tokens[i]);
        AtomicFile.Write(path, stream => stream.Write(bytes));
    }
}

/// <summary>A memory-mapped file of 1- or 2-byte little-endian token ids after an optional header.</summary>
internal sealed unsafe class MappedTokenFile : ITokenSource, IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _tokens;
    private readonly int _elementSize;
    private bool _disposed;

    public MappedTokenFile(string path, long offset, long count, int elementSize, int vocabSize, string description)
    {
        _elementSize = elementSize;
        Length = count;
        VocabSize = vocabSize;
        Description = description;
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePointer = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            _tokens = basePointer + _view.PointerOffset + offset;
            CheckRange(path);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int VocabSize { get; }

    public long Length { get; }

    public string Description { get; }

    private void CheckRange(string path)
    {
        if (VocabSize >= (1 << (8 * _elementSize))) return;
        const int chunk = 1 << 28;
        for (long start = 0; start < Length; start += chunk)
        {
            var n = (int)Math.Min(chunk, Length - start);
            int bad;
            long id;
            if (_elementSize == 1)
            {
                bad = new ReadOnlySpan<byte>(_tokens + start, n).IndexOfAnyExceptInRange((byte)0, (byte)(VocabSize - 1));
                id = bad < 0 ? 0 : _tokens[start + bad];
            }
            else
            {
                var span = new ReadOnlySpan<ushort>(_tokens + 2 * start, n);
                bad = BitConverter.IsLittleEndian ? span.IndexOfAnyExceptInRange((ushort)0, (ushort)(VocabSize - 1)) : FirstOutOfRangeBigEndian(span);
                id = bad < 0 ? 0 : BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(_tokens + 2 * (start + bad), 2));
            }
            if (bad >= 0)
                throw new InvalidDataException(
                    $"Token file '{path}' has token id {id} at position {start + bad}, but the model's vocabulary has only {VocabSize} ids (vocab_size {VocabSize}). " +
                    "Use a model whose config has a larger vocab_size (--config or --model), or data tokenized for this vocabulary.");
        }
    }

    private int FirstOutOfRangeBigEndian(ReadOnlySpan<ushort> span)
    {
        for (var i = 0; i < span.Length; i++)
            if (BinaryPrimitives.ReverseEndianness(span[i]) >= VocabSize) return i;
        return -1;
    }

    public void Read(long start, Span<int> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var position = ((start % Length) + Length) % Length;
        while (destination.Length > 0)
        {
            var n = (int)Math.Min(destination.Length, Length - position);
            var target = destination[..n];
            if (_elementSize == 1)
            {
                var source = new ReadOnlySpan<byte>(_tokens + position, n);
                for (var i = 0; i < n; i++) target[i] = source[i];
            }
            else
            {
                var source = new ReadOnlySpan<byte>(_tokens + 2 * position, 2 * n);
                for (var i = 0; i < n; i++) target[i] = BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]);
            }
            destination = destination[n..];
            position = 0;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_view is not null)
        {
            if (_tokens != null) _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map.Dispose();
    }

    public override string ToString() => Description;
}
