// safetensors writing and reading, dtype conversion, and clear errors for damaged files.
using System.Buffers.Binary;
using System.Text;
using Xunit;

namespace L2L.Model.Tests;

public class SafeTensorsTests
{
    /// <summary>Writes a safetensors file byte by byte, so tests do not depend on the writer under test.</summary>
    internal static void WriteRaw(string path, string headerJson, byte[] data, ulong? headerLengthOverride = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLengthOverride ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        File.WriteAllBytes(path, bytes);
    }

    [Fact]
    public void F32RoundTripWithMetadata()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.safetensors");
        var a = Enumerable.Range(0, 6).Select(i => i * 0.5f - 1).ToArray();
        var b = new[] { float.MaxValue, float.Epsilon, -0f, float.NaN, float.NegativeInfinity };
        SafeTensors.Write(path,
            [("a", [2L, 3L], a), ("b", [5L], b), ("scalar", [], new[] { 3.25f }), ("empty", [0L, 4L], Array.Empty<float>())],
            new Dictionary<string, string> { ["format"] = "pt", ["note"] = "héllo \"quoted\"" });

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(["a", "b", "empty", "scalar"], file.Tensors.Keys.Order());
        Assert.Equal("F32", file.Tensors["a"].DType);
        Assert.Equal([2L, 3L], file.Tensors["a"].Shape);
        Assert.Empty(file.Tensors["scalar"].Shape);
        Assert.Equal("héllo \"quoted\"", file.Metadata["note"]);
        Assert.Equal("pt", file.Metadata["format"]);

        var ra = new float[6];
        file.ReadFloat32("a", ra);
        Assert.Equal(a, ra);
        var rb = new float[5];
        file.ReadFloat32("b", rb);
        Assert.Equal(b.Select(BitConverter.SingleToInt32Bits), rb.Select(BitConverter.SingleToInt32Bits));
        var rs = new float[1];
        file.ReadFloat32("scalar", rs);
        Assert.Equal(3.25f, rs[0]);
        file.ReadFloat32("empty", Span<float>.Empty);

        // The header is padded so the data starts 8-byte aligned.
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path));
        Assert.Equal(0UL, headerLength % 8);
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void ReadsF16Bf16AndF64()
    {
        using var dir = new TempDirectory();
        var path = dir.File("mixed.safetensors");
        var halfValues = new[] { 1f, -2.5f, 0.099975586f, 65504f, 6.1035156e-05f };
        var bf16Values = new[] { 1f, -3f, 0.15625f, 1.0e30f };
        var doubleValues = new[] { Math.PI, -1e-3 };
        var data = new List<byte>();
        foreach (var v in halfValues)
        {
            var bits = BitConverter.HalfToUInt16Bits((Half)v);
            data.Add((byte)bits);
            data.Add((byte)(bits >> 8));
        }
        foreach (var v in bf16Values)
        {
            var bits = (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16);
            data.Add((byte)bits);
            data.Add((byte)(bits >> 8));
        }
        foreach (var v in doubleValues) data.AddRange(BitConverter.GetBytes(v));
        const string header = """{"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},"bf":{"dtype":"BF16","shape":[2,2],"data_offsets":[10,18]},"d":{"dtype":"F64","shape":[2],"data_offsets":[18,34]},"i":{"dtype":"I32","shape":[0],"data_offsets":[34,34]}}""";
        WriteRaw(path, header, data.ToArray());

        using var file = SafeTensorsFile.Open(path);
        var h = new float[5];
        file.ReadFloat32("h", h);
        Assert.Equal(halfValues.Select(v => (float)(Half)v), h);
        Assert.Equal(-2.5f, h[1]);
        var bf = new float[4];
        file.ReadFloat32("bf", bf);
        Assert.Equal(new[] { 1f, -3f, 0.15625f }, bf.Take(3));
        Assert.Equal(1.0e30f, bf[3], 1e28f);
        var d = new float[2];
        file.ReadFloat32("d", d);
        Assert.Equal([(float)Math.PI, -1e-3f], d);
        Assert.Throws<InvalidDataException>(() => file.ReadFloat32("i", Span<float>.Empty));
        Assert.Throws<KeyNotFoundException>(() => file.ReadFloat32("nope", Span<float>.Empty));
        Assert.Throws<ArgumentException>(() => file.ReadFloat32("h", new float[4]));
    }

    public static TheoryData<string, string, int, string> DamagedFiles => new()
    {
        { "bad JSON", """{"a": {"dtype": "F32", """, 8, "not valid JSON" },
        { "offsets out of range", """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8, "truncated" },
        { "shape disagrees with bytes", """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8, "needs 12 bytes" },
        { "overlap", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "overlap" },
        { "unknown dtype", """{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}""", 8, "unknown dtype" },
        { "negative dim", """{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 8, "invalid shape" },
        { "reversed offsets", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 8, "data_offsets" },
        { "not an object", """[1,2,3]""", 8, "JSON object" },
        { "metadata not strings", """{"__metadata__":{"step":3}}""", 0, "must be a string" },
    };

    [Theory]
    [MemberData(nameof(DamagedFiles))]
    public void DamagedHeaderGivesAClearError(string what, string header, int dataBytes, string expected)
    {
        using var dir = new TempDirectory();
        var path = dir.File("bad.safetensors");
        WriteRaw(path, header, new byte[dataBytes]);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"{what}: '{e.Message}' should mention '{expected}'");
    }

    [Fact]
    public void TruncatedFileSaysHowLong()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.safetensors");
        SafeTensors.Write(path, [("w", [64L], new float[64])]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^10]);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("256", e.Message); // what the header says
        Assert.Contains("246", e.Message); // what the file has

        File.WriteAllBytes(path, bytes[..20]);
        e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("truncated: header says", e.Message);

        File.WriteAllBytes(path, bytes[..5]);
        Assert.Contains("truncated", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path)).Message);
    }

    [Fact]
    public void CorruptHeaderLengthIsReported()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.safetensors");
        WriteRaw(path, "{}", [], headerLengthOverride: 0xFFFF_FFFF_FFFF_FFF0UL);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("corrupt header length", e.Message);
        Assert.Contains(path, e.Message);

        File.WriteAllText(path, "This is a text file, not safetensors at all.");
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
    }

    [Fact]
    public void WriterRejectsInconsistentInput()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.safetensors");
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, [("a", [2L, 2L], new float[3])]));
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, [("a", [1L], new float[1]), ("a", [1L], new float[1])]));
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, [("__metadata__", [1L], new float[1])]));
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void FailedWriteKeepsTheOldFile()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.safetensors");
        SafeTensors.Write(path, [("a", [2L], new[] { 1f, 2f })]);
        var before = File.ReadAllBytes(path);
        Assert.Throws<InvalidOperationException>(() => SafeTensors.Write(path, Failing()));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(dir.Path));

        static IEnumerable<(string, long[], ReadOnlyMemory<float>)> Failing()
        {
            yield return ("a", [1L], new[] { 9f });
            throw new InvalidOperationException("source failed");
        }
    }
}
