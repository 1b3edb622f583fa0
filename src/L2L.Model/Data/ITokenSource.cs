// The token stream a training run reads from, whatever its origin (file, raw bytes, synthetic).
namespace L2L.Model.Data;

/// <summary>A finite sequence of token ids, read as an endless loop.</summary>
public interface ITokenSource
{
    /// <summary>Every id in the source is below this.</summary>
    int VocabSize { get; }

    /// <summary>Number of tokens before the sequence repeats.</summary>
    long Length { get; }

    /// <summary>What the data is, for logs and errors.</summary>
    string Description { get; }

    /// <summary>
    /// Copies <c>destination.Length</c> tokens starting at <paramref name="start"/>, wrapping around to
    /// token 0 after the last (and <paramref name="start"/> itself is taken modulo <see cref="Length"/>).
    /// </summary>
    void Read(long start, Span<int> destination);
}
