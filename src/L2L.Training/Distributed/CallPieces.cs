// Splits a 64-bit element count into pieces that fit the int count of one MPI call.
namespace L2L.Training.Distributed;

/// <summary>The pieces [offset, offset + length) that cover a buffer when one call may move at most a given number of elements.</summary>
public static class CallPieces
{
    /// <summary>Number of pieces needed for <paramref name="count"/> elements, at most <paramref name="maxPerCall"/> each (0 for an empty buffer).</summary>
    public static long Count(long count, long maxPerCall)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPerCall, 1);
        return count == 0 ? 0 : (count - 1) / maxPerCall + 1;
    }

    /// <summary>Offset and length of piece <paramref name="index"/>; every piece is full except possibly the last.</summary>
    public static (long Offset, int Length) Piece(long count, long maxPerCall, long index)
    {
        long offset = index * maxPerCall;
        if (index < 0 || offset >= count) throw new ArgumentOutOfRangeException(nameof(index));
        return (offset, (int)Math.Min(maxPerCall, count - offset));
    }
}
