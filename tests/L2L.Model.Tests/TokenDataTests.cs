// Token files: llm.c .bin and raw bytes, and the errors for damaged or mismatched data.
using System.Buffers.Binary;
using L2L.Model.Data;
using Xunit;

namespace L2L.Model.Tests;

public class TokenDataTests
{
    private static int[] ReadAll(ITokenSource source, long start, int count)
    {
        var result = new int[count];
        source.Read(start, result);
        return result;
    }

    [Fact]
    public void BinRoundTrips()
    {
        using var dir = new TempDirectory();
        var path = dir.File("train.bin");
        ushort[] tokens = [50256, 0, 1, 65535, 464, 3290, 7];
        TokenData.WriteBin(path, tokens);

        var bytes = File.ReadAllBytes(path);
        Assert.Equal(1024 + 2 * tokens.Length, bytes.Length);
        Assert.Equal(20240520, BinaryPrimitives.ReadInt32LittleEndian(bytes));
        Assert.Equal(1, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4)));
        Assert.Equal(tokens.Length, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8)));

        var source = TokenData.Open(path, vocabSize: 65536);
        using var _ = (IDisposable)source;
        Assert.Equal(tokens.Length, source.Length);
        Assert.Equal(65536, source.VocabSize);
        Assert.Contains("train.bin", source.Description);
        Assert.Equal(tokens.Select(t => (int)t), ReadAll(source, 0, tokens.Length));
        // Reads wrap around the end, any number of times.
        Assert.Equal([3290, 7, 50256, 0, 1, 65535, 464, 3290, 7, 50256], ReadAll(source, 5, 10));
        Assert.Equal(ReadAll(source, 2, 3), ReadAll(source, 2 + 3 * tokens.Length, 3));
    }

    [Fact]
    public void TokenOutsideTheVocabularyIsReportedWithItsPosition()
    {
        using var dir = new TempDirectory();
        var path = dir.File("big.bin");
        var tokens = new ushort[100_000];
        for (var i = 0; i < tokens.Length; i++) tokens[i] = (ushort)(i % 50257);
        tokens[77_777] = 50300;
        TokenData.WriteBin(path, tokens);

        var e = Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 50257));
        Assert.Contains(path, e.Message);
        Assert.Contains("50300", e.Message);
        Assert.Contains("position 77777", e.Message);
        Assert.Contains("50257", e.Message);
        Assert.Contains("vocab_size", e.Message);
        Assert.Contains("--config", e.Message);

        using var fine = (IDisposable)TokenData.Open(path, 50301);
    }

    [Fact]
    public void TruncatedBinIsRejected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.bin");
        TokenData.WriteBin(path, new ushort[] { 1, 2, 3, 4 });
        var bytes = File.ReadAllBytes(path);

        File.WriteAllBytes(path, bytes[..^3]);
        var e = Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 256));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("4 tokens", e.Message);

        File.WriteAllBytes(path, bytes[..500]);
        Assert.Contains("truncated", Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 256)).Message);

        File.WriteAllBytes(path, [.. bytes, 9, 9]);
        Assert.Contains("4 tokens", Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 256)).Message);
    }

    [Fact]
    public void EmptyFilesAreRejected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("empty.txt");
        File.WriteAllBytes(path, []);
        var e = Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 256));
        Assert.Contains("empty", e.Message);
        Assert.Contains(path, e.Message);

        var bin = dir.File("empty.bin");
        TokenData.WriteBin(bin, ReadOnlySpan<ushort>.Empty);
        Assert.Contains("empty", Assert.Throws<InvalidDataException>(() => TokenData.Open(bin, 256)).Message);

        Assert.Throws<FileNotFoundException>(() => TokenData.Open(dir.File("missing.bin"), 256));
    }

    [Fact]
    public void UnsupportedVersionIsRejected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("v2.bin");
        TokenData.WriteBin(path, new ushort[] { 1, 2 });
        var bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), 2);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("version 2", Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 50257)).Message);
    }

    [Fact]
    public void OtherFilesAreReadAsRawBytes()
    {
        using var dir = new TempDirectory();
        var path = dir.File("input.txt");
        var text = "First Citizen:\nBefore we proceed any further, hear me speak. Ünïcödé\n"u8.ToArray();
        File.WriteAllBytes(path, text);

        var source = TokenData.Open(path, 50257);
        Assert.Equal(256, source.VocabSize);
        Assert.Equal(text.Length, source.Length);
        Assert.Contains("raw bytes", source.Description);
        Assert.Equal(text.Select(b => (int)b), ReadAll(source, 0, text.Length));
        Assert.Equal([text[^1], text[0], text[1]], ReadAll(source, text.Length - 1, 3));
        ((IDisposable)source).Dispose();

        // A byte-level model with a smaller vocabulary cannot take every byte.
        var e = Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 128));
        Assert.Contains("position", e.Message);
        Assert.Contains("195", e.Message); // the first byte of 'Ü' in UTF-8
    }

    [Fact]
    public void ABinFileMustBeAnLlmcFileUnlessBytesAreAskedFor()
    {
        using var dir = new TempDirectory();
        var path = dir.File("notes.bin");
        var bytes = "plain text, not tokens, long enough to hold a header's first words"u8.ToArray();
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<InvalidDataException>(() => TokenData.Open(path, 50257));
        Assert.Contains("not an llm.c token file", e.Message);
        Assert.Contains($"not the magic number {TokenData.Magic}", e.Message);
        Assert.Contains("--data-format bytes", e.Message);

        using var raw = (IDisposable)TokenData.Open(path, 50257, TokenFileFormat.Bytes);
        Assert.Equal(bytes.Length, ((ITokenSource)raw).Length);
        Assert.Contains("raw bytes", ((ITokenSource)raw).Description);

        var tiny = dir.File("tiny.bin");
        File.WriteAllBytes(tiny, [1, 2]);
        Assert.Contains("it has only 2 bytes", Assert.Throws<InvalidDataException>(() => TokenData.Open(tiny, 256)).Message);
    }

    [Fact]
    public void TheFormatCanBeForcedEitherWay()
    {
        using var dir = new TempDirectory();
        var tokens = dir.File("tokens.dat");
        TokenData.WriteBin(tokens, new ushort[] { 5, 6, 7 });
        using (var auto = (IDisposable)TokenData.Open(tokens, 256))
            Assert.Equal(3, ((ITokenSource)auto).Length); // the magic number makes it llm.c whatever the name
        using (var asBytes = (IDisposable)TokenData.Open(tokens, 256, TokenFileFormat.Bytes))
            Assert.Equal(TokenData.HeaderBytes + 6, ((ITokenSource)asBytes).Length);
        var text = dir.File("text.txt");
        File.WriteAllText(text, "hello");
        Assert.Contains("not an llm.c token file", Assert.Throws<InvalidDataException>(() => TokenData.Open(text, 256, TokenFileFormat.Llmc)).Message);
    }
}
