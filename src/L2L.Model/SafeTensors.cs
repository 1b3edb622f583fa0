// Reading and writing safetensors files: a u64 little-endian header length, a JSON header, then raw tensor data.
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace L2L.Model;

/// <summary>One tensor entry of a safetensors header.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="DType">safetensors dtype, e.g. <c>F32</c>, <c>F16</c>, <c>BF16</c>.</param>
/// <param name="Shape">Row-major shape.</param>
/// <param name="Begin">First byte, relative to the end of the header.</param>
/// <param name="End">One past the last byte, relative to the end of the header.</param>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements, the product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (n, d) => n * d);
}

/// <summary>
/// An open safetensors file whose header has been validated. Tensor data is read on demand, so
/// opening a multi-gigabyte checkpoint costs only the header.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>safetensors' own limit on the header size; a larger value means a corrupt or foreign file.</summary>
    private const long MaxHeaderBytes = 100_000_000;

    private static readonly Dictionary<string, int> DTypeSizes = new(StringComparer.Ordinal)
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2,
        ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1,
        ["U64"] = 8, ["U32"] = 4, ["U16"] = 2, ["U8"] = 1,
        ["BOOL"] = 1, ["F8_E4M3"] = 1, ["F8_E5M2"] = 1,
    };

    private readonly SafeFileHandle _handle;
    private readonly long _dataStart;

    private SafeTensorsFile(string path, SafeFileHandle handle, long dataStart, Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _handle = handle;
        _dataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file this was opened from.</summary>
    public string Path { get; }

    /// <summary>The tensors by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }

    /// <summary>The string pairs of the header's <c>__metadata__</c> entry (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Whether <paramref name="dtype"/> is one <see cref="ReadFloat32"/> converts.</summary>
    public static bool IsFloatType(string dtype) => dtype is "F32" or "F16" or "BF16" or "F64";

    /// <summary>Opens <paramref name="path"/> and validates its header.</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">
    /// The header is damaged: length not sane, JSON invalid, an entry malformed, offsets out of range
    /// or overlapping, or a byte count that disagrees with dtype and shape. The message names the file.
    /// </exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file '{path}' not found.", path);
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            var fileLength = RandomAccess.GetLength(handle);
            if (fileLength < 8)
                throw Bad(path, $"truncated: {fileLength} bytes, too short for the 8-byte header length");
            Span<byte> prefix = stackalloc byte[8];
            ReadExactly(handle, prefix, 0);
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength < 2 || headerLength > MaxHeaderBytes)
                throw Bad(path, $"corrupt header length {headerLength} (expected 2 to {MaxHeaderBytes} bytes); this is not a safetensors file or it is damaged");
            if ((long)headerLength > fileLength - 8)
                throw Bad(path, $"truncated: header says {headerLength} header bytes, file has {fileLength - 8} after the length field");

            var headerBytes = new byte[headerLength];
            ReadExactly(handle, headerBytes, 8);
            var dataStart = 8 + (long)headerLength;
            var (tensors, metadata) = ParseHeader(path, headerBytes, fileLength - dataStart);
            return new SafeTensorsFile(path, handle, dataStart, tensors, metadata);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] headerBytes, long dataLength)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException e)
        {
            throw Bad(path, $"header is not valid JSON ({e.Message})");
        }

        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw Bad(path, $"header must be a JSON object, found {document.RootElement.ValueKind}");
            foreach (var entry in document.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__")
                {
                    if (entry.Value.ValueKind != JsonValueKind.Object)
                        throw Bad(path, "__metadata__ must be an object of strings");
                    foreach (var pair in entry.Value.EnumerateObject())
                    {
                        if (pair.Value.ValueKind != JsonValueKind.String)
                            throw Bad(path, $"__metadata__ value of '{pair.Name}' must be a string, found {pair.Value.GetRawText()}");
                        metadata[pair.Name] = pair.Value.GetString()!;
                    }
                    continue;
                }
                if (!tensors.TryAdd(entry.Name, ParseEntry(path, entry)))
                    throw Bad(path, $"tensor '{entry.Name}' appears twice in the header");
            }
        }

        var ordered = tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.End).ToList();
        var furthest = ordered.Count == 0 ? 0 : ordered.Max(t => t.End);
        if (furthest > dataLength)
        {
            var culprit = ordered.First(t => t.End > dataLength);
            throw Bad(path, $"truncated: header says the data section has {furthest} bytes, file has {dataLength} " +
                $"(tensor '{culprit.Name}' data_offsets [{culprit.Begin}, {culprit.End}] are out of range)");
        }
        for (var i = 1; i < ordered.Count; i++)
        {
            if (ordered[i].Begin < ordered[i - 1].End)
                throw Bad(path, $"tensors '{ordered[i - 1].Name}' [{ordered[i - 1].Begin}, {ordered[i - 1].End}) and '{ordered[i].Name}' [{ordered[i].Begin}, {ordered[i].End}) overlap");
        }
        return (tensors, metadata);
    }

    private static SafeTensorInfo ParseEntry(string path, JsonProperty entry)
    {
        var name = entry.Name;
        var value = entry.Value;
        if (value.ValueKind != JsonValueKind.Object)
            throw Bad(path, $"entry '{name}' must be an object with dtype, shape and data_offsets");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Bad(path, $"tensor '{name}' has no string \"dtype\"");
        var dtype = dtypeElement.GetString()!;
        if (!DTypeSizes.TryGetValue(dtype, out var elementSize))
            throw Bad(path, $"tensor '{name}' has unknown dtype '{dtype}'");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw Bad(path, $"tensor '{name}' has no \"shape\" array");
        var shape = new long[shapeElement.GetArrayLength()];
        var i = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var dim) || dim < 0)
                throw Bad(path, $"tensor '{name}' has an invalid shape {shapeElement.GetRawText()}");
            shape[i++] = dim;
        }
        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2
            || !offsets[0].TryGetInt64(out var begin) || !offsets[1].TryGetInt64(out var end) || begin < 0 || end < begin)
            throw Bad(path, $"tensor '{name}' has invalid data_offsets (expected [begin, end] with 0 <= begin <= end)");

        long bytes;
        try
        {
            bytes = checked(shape.Aggregate(1L, (n, d) => checked(n * d)) * elementSize);
        }
        catch (OverflowException)
        {
            throw Bad(path, $"tensor '{name}' shape {shapeElement.GetRawText()} is too large");
        }
        if (bytes != end - begin)
            throw Bad(path, $"tensor '{name}' is {dtype} with shape [{string.Join(", ", shape)}], which needs {bytes} bytes, but data_offsets [{begin}, {end}] span {end - begin}");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    /// <summary>
    /// Reads tensor <paramref name="name"/> into <paramref name="destination"/> as float, converting
    /// from F32, F16, BF16 or F64.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="ArgumentException"><paramref name="destination"/> length differs from the element count.</exception>
    /// <exception cref="InvalidDataException">The dtype is not a floating-point type.</exception>
    public void ReadFloat32(string name, Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        if (!Tensors.TryGetValue(name, out var info))
            throw new KeyNotFoundException($"safetensors file '{Path}' has no tensor '{name}'.");
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"Tensor '{name}' in '{Path}' has {info.ElementCount} elements, the destination has {destination.Length}.", nameof(destination));
        var offset = _dataStart + info.Begin;
        switch (info.DType)
        {
            case "F32":
                ReadExactly(_handle, MemoryMarshal.AsBytes(destination), offset);
                if (!BitConverter.IsLittleEndian)
                {
                    var bits = MemoryMarshal.Cast<float, int>(destination);
                    BinaryPrimitives.ReverseEndianness(bits, bits);
                }
                break;
            case "F16":
                ReadConverted(offset, destination, 2, (bytes, i) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..])));
                break;
            case "BF16":
                ReadConverted(offset, destination, 2, (bytes, i) => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]) << 16));
                break;
            case "F64":
                ReadConverted(offset, destination, 8, (bytes, i) => (float)BinaryPrimitives.ReadDoubleLittleEndian(bytes[(8 * i)..]));
                break;
            default:
                throw new InvalidDataException($"Tensor '{name}' in '{Path}' has dtype {info.DType}; only F32, F16, BF16 and F64 can be read as float.");
        }
    }

    private delegate float Convert(ReadOnlySpan<byte> bytes, int index);

    private void ReadConverted(long offset, Span<float> destination, int elementSize, Convert convert)
    {
        var chunkElements = (1 << 20) / elementSize;
        var buffer = new byte[chunkElements * elementSize];
        for (var start = 0; start < destination.Length; start += chunkElements)
        {
            var count = Math.Min(chunkElements, destination.Length - start);
            var bytes = buffer.AsSpan(0, count * elementSize);
            ReadExactly(_handle, bytes, offset + (long)start * elementSize);
            var target = destination.Slice(start, count);
            for (var i = 0; i < count; i++) target[i] = convert(bytes, i);
        }
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        while (buffer.Length > 0)
        {
            var n = RandomAccess.Read(handle, buffer, offset);
            if (n <= 0) throw new EndOfStreamException("File ended early (was it truncated while open?).");
            buffer = buffer[n..];
            offset += n;
        }
    }

    private static InvalidDataException Bad(string path, string what) => new($"Invalid safetensors file '{path}': {what}.");

    /// <inheritdoc/>
    public void Dispose() => _handle.Dispose();
}

/// <summary>Writes safetensors files.</summary>
public static class SafeTensors
{
    /// <summary>
    /// Writes <paramref name="tensors"/> as F32 with optional <paramref name="metadata"/>, atomically:
    /// into a temporary file in the same directory, flushed to disk, then renamed over
    /// <paramref name="path"/>, so readers see either the old file or the complete new one.
    /// </summary>
    /// <exception cref="ArgumentException">A name is empty, reserved or repeated, or a shape does not match its data length.</exception>
    public static void Write(string path, IEnumerable<(string Name, long[] Shape, ReadOnlyMemory<float> Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape, data) in list)
        {
            if (string.IsNullOrEmpty(name) || name == "__metadata__")
                throw new ArgumentException($"Invalid tensor name '{name}'.", nameof(tensors));
            if (!names.Add(name))
                throw new ArgumentException($"Tensor '{name}' is given twice.", nameof(tensors));
            ArgumentNullException.ThrowIfNull(shape);
            if (shape.Any(d => d < 0) || shape.Aggregate(1L, (n, d) => n * d) != data.Length)
                throw new ArgumentException($"Tensor '{name}' has shape [{string.Join(", ", shape)}] but {data.Length} values.", nameof(tensors));
        }

        var header = BuildHeader(list, metadata);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            stream.Write(prefix);
            stream.Write(header);
            foreach (var (_, _, data) in list) WriteFloats(stream, data.Span);
        });
    }

    private static byte[] BuildHeader(List<(string Name, long[] Shape, ReadOnlyMemory<float> Data)> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) writer.WriteString(key, value);
                writer.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, shape, data) in tensors)
            {
                writer.WriteStartObject(name);
                writer.WriteString("dtype", "F32");
                writer.WriteStartArray("shape");
                foreach (var d in shape) writer.WriteNumberValue(d);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                offset += 4L * data.Length;
                writer.WriteNumberValue(offset);
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }
        // Padding the header with spaces to a multiple of 8 keeps the data aligned, as the reference writer does.
        while (buffer.Length % 8 != 0) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    private static void WriteFloats(Stream stream, ReadOnlySpan<float> data)
    {
        if (BitConverter.IsLittleEndian)
        {
            stream.Write(MemoryMarshal.AsBytes(data));
            return;
        }
        var bytes = new byte[4];
        foreach (var value in data)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes, value);
            stream.Write(bytes);
        }
    }
}

/// <summary>Replaces a file so that a crash leaves either the old content or the complete new content.</summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        var fullPath = System.IO.Path.GetFullPath(path);
        var directory = System.IO.Path.GetDirectoryName(fullPath)!;
        Directory.CreateDirectory(directory);
        var temp = System.IO.Path.Combine(directory, $".{System.IO.Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
