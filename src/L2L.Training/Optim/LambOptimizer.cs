// LAMB (You et al. 2019, Algorithm 2) on the host: Adam direction with bias correction, weight decay inside the
// update, and one trust ratio ||w|| / ||update|| per slice. Two passes, because the ratio needs the whole slice.
using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace L2L.Training.Optim;

internal sealed unsafe class LambOptimizer(OptimizerSettings settings, int threads) : HostOptimizerBase(settings, threads)
{
    // Squares are summed in 16 double lanes, element i of a chunk into lane i % 16, and the lanes and then the
    // chunks are added in order: the norms, and so every weight, are the same for any thread count or vector width.
    private const int Lanes = 16;

    public override OptimizerKind Kind => OptimizerKind.Lamb;

    public override int StateFloatsPerParam => 2;

    internal readonly struct Constants
    {
        public readonly float OneMinusBeta1;
        public readonly float Beta2;
        public readonly float OneMinusBeta2;
        public readonly float Bc1;
        public readonly float Bc2Sqrt;
        public readonly float Epsilon;
        public readonly float WeightDecay;
        public readonly bool Decay;

        public Constants(OptimizerSettings s, int step, bool decay)
        {
            OneMinusBeta1 = (float)(1.0 - s.Beta1);
            Beta2 = s.Beta2;
            OneMinusBeta2 = (float)(1.0 - s.Beta2);
            Bc1 = (float)BiasCorrection(s.Beta1, step);
            Bc2Sqrt = (float)Math.Sqrt(BiasCorrection(s.Beta2, step));
            Epsilon = s.Epsilon;
            WeightDecay = s.WeightDecay;
            // Adding a zero decay term could still flip the sign of a zero update, so decay-free slices skip it.
            Decay = decay && s.WeightDecay != 0f;
        }
    }

    /// <summary>The trust ratio <c>||w|| / ||u||</c>, or 1 when either norm is zero (a fresh zero tensor, or no update).</summary>
    internal static double TrustRatio(double weightSquares, double updateSquares)
    {
        var w = Math.Sqrt(weightSquares);
        var u = Math.Sqrt(updateSquares);
        return w > 0 && u > 0 ? w / u : 1.0;
    }

    protected override void Update(in Slice slice, int step, float lr, bool decay)
    {
        var c = new Constants(Settings, step, decay);
        var chunks = ChunkCount(slice.Length);
        double weightSquares = 0, updateSquares = 0;
        if (!UseHelpers(slice.Length))
        {
            for (var k = 0; k < chunks; k++)
            {
                var start = (nint)k * ChunkSize;
                Moments(slice, c, start, Math.Min(start + ChunkSize, slice.Length), out var ws, out var us);
                weightSquares += ws;
                updateSquares += us;
            }
            var scale = (float)(-(lr * TrustRatio(weightSquares, updateSquares)));
            Apply(slice, c, scale, 0, slice.Length);
            return;
        }

        var partials = ArrayPool<double>.Shared.Rent(2 * chunks);
        try
        {
            fixed (double* sums = partials)
            {
                var moments = RentJob<Job>();
                moments.Set(slice, c, applyScale: null, sums);
                moments.RunAndRelease(chunks, Threads);
                for (var k = 0; k < chunks; k++)
                {
                    weightSquares += sums[2 * k];
                    updateSquares += sums[2 * k + 1];
                }
            }
            var scale = (float)(-(lr * TrustRatio(weightSquares, updateSquares)));
            var apply = RentJob<Job>();
            apply.Set(slice, c, scale, null);
            apply.RunAndRelease(chunks, Threads);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(partials);
        }
    }

    /// <summary>First pass over one chunk: updates m and v and returns the chunk's sums of w^2 and u^2.</summary>
    internal static void Moments(in Slice s, in Constants c, nint start, nint end, out double weightSquares, out double updateSquares)
    {
        switch (s.GradFormat)
        {
            case GradFormat.Half: Moments<HalfGrads>(s, c, start, end, out weightSquares, out updateSquares); break;
            case GradFormat.Bf16: Moments<Bf16Grads>(s, c, start, end, out weightSquares, out updateSquares); break;
            default: Moments<SingleGrads>(s, c, start, end, out weightSquares, out updateSquares); break;
        }
    }

    private static void Moments<TGrad>(in Slice s, in Constants c, nint start, nint end, out double weightSquares, out double updateSquares)
        where TGrad : struct, IGradReader
    {
        var accW = stackalloc double[Lanes];
        var accU = stackalloc double[Lanes];
        new Span<double>(accW, Lanes).Clear();
        new Span<double>(accU, Lanes).Clear();
        // Pointers in locals: a store through one of them could alias the struct, which would force reloads.
        float* param = s.Param, mom = s.M, vel = s.V;
        var grad = s.Grad;
        var factor = s.GradFactor;
        var i = start;
        if (Vector.IsHardwareAccelerated && Vector<float>.Count <= Lanes)
        {
            var w = Vector<float>.Count;
            var d = new DirectionVectors(c);
            var factorV = new Vector<float>(factor);
            var oneMinusBeta1 = new Vector<float>(c.OneMinusBeta1);
            var beta2 = new Vector<float>(c.Beta2);
            var oneMinusBeta2 = new Vector<float>(c.OneMinusBeta2);
            var lane = 0;
            for (; i <= end - 2 * w; i += 2 * w)
            {
                TGrad.Load(grad, i, factorV, out var g0, out var g1);
                var p0 = Vector.Load(param + i);
                var p1 = Vector.Load(param + i + w);
                var m0 = Vector.Load(mom + i);
                var m1 = Vector.Load(mom + i + w);
                var v0 = Vector.Load(vel + i);
                var v1 = Vector.Load(vel + i + w);

                m0 = m0 + oneMinusBeta1 * (g0 - m0);
                v0 = v0 * beta2 + oneMinusBeta2 * g0 * g0;
                var u0 = Direction(p0, m0, v0, d);
                m1 = m1 + oneMinusBeta1 * (g1 - m1);
                v1 = v1 * beta2 + oneMinusBeta2 * g1 * g1;
                var u1 = Direction(p1, m1, v1, d);

                m0.Store(mom + i);
                m1.Store(mom + i + w);
                v0.Store(vel + i);
                v1.Store(vel + i + w);
                AddSquares(accW, lane, p0, p1);
                AddSquares(accU, lane, u0, u1);
                lane = (lane + 2 * w) & (Lanes - 1);
            }
        }
        for (; i < end; i++)
        {
            var g = TGrad.Load(grad, i, factor);
            var p = param[i];
            var m = mom[i];
            var v = vel[i];

            m = m + c.OneMinusBeta1 * (g - m);
            v = v * c.Beta2 + c.OneMinusBeta2 * g * g;
            var u = Direction(p, m, v, c);

            mom[i] = m;
            vel[i] = v;
            var lane = (int)((i - start) & (Lanes - 1));
            accW[lane] += (double)p * (double)p;
            accU[lane] += (double)u * (double)u;
        }
        weightSquares = 0;
        updateSquares = 0;
        for (var k = 0; k < Lanes; k++)
        {
            weightSquares += accW[k];
            updateSquares += accU[k];
        }
    }

    /// <summary>Second pass: recomputes the update from the stored moments (bit-identical to the first pass) and applies <c>p += scale * u</c>.</summary>
    internal static void Apply(in Slice s, in Constants c, float scale, nint start, nint end)
    {
        if (s.CopyIsBf16) Apply<Bf16Copy>(s, c, scale, start, end);
        else Apply<HalfCopy>(s, c, scale, start, end);
    }

    private static void Apply<TCopy>(in Slice s, in Constants c, float scale, nint start, nint end) where TCopy : struct, ICopyWriter
    {
        float* param = s.Param, mom = s.M, vel = s.V;
        var half = s.Half;
        var i = start;
        if (Vector.IsHardwareAccelerated)
        {
            var w = Vector<float>.Count;
            var d = new DirectionVectors(c);
            var scaleV = new Vector<float>(scale);
            for (; i <= end - 2 * w; i += 2 * w)
            {
                var p0 = Vector.Load(param + i);
                var p1 = Vector.Load(param + i + w);
                var u0 = Direction(p0, Vector.Load(mom + i), Vector.Load(vel + i), d);
                var u1 = Direction(p1, Vector.Load(mom + i + w), Vector.Load(vel + i + w), d);

                p0 = p0 + scaleV * u0;
                p1 = p1 + scaleV * u1;

                p0.Store(param + i);
                p1.Store(param + i + w);
                if (half != null) TCopy.Store(half + i, p0, p1);
            }
        }
        for (; i < end; i++)
        {
            var p = param[i];
            var u = Direction(p, mom[i], vel[i], c);

            p = p + scale * u;

            param[i] = p;
            if (half != null) half[i] = TCopy.Bits(p);
        }
    }

    /// <summary>The update direction <c>mhat / (sqrt(vhat) + eps) + wd * p</c>, from the constants broadcast once per chunk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> Direction(Vector<float> p, Vector<float> m, Vector<float> v, in DirectionVectors d)
    {
        var u = m / d.Bc1 / (Vector.SquareRoot(v) / d.Bc2Sqrt + d.Epsilon);
        if (d.Decay) u = u + d.WeightDecay * p;
        return u;
    }

    /// <summary>Scalar mirror of <see cref="Direction(Vector{float}, Vector{float}, Vector{float}, in DirectionVectors)"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Direction(float p, float m, float v, in Constants c)
    {
        var u = m / c.Bc1 / (MathF.Sqrt(v) / c.Bc2Sqrt + c.Epsilon);
        if (c.Decay) u = u + c.WeightDecay * p;
        return u;
    }

    private readonly struct DirectionVectors(in Constants c)
    {
        public readonly Vector<float> Bc1 = new(c.Bc1);
        public readonly Vector<float> Bc2Sqrt = new(c.Bc2Sqrt);
        public readonly Vector<float> Epsilon = new(c.Epsilon);
        public readonly Vector<float> WeightDecay = new(c.WeightDecay);
        public readonly bool Decay = c.Decay;
    }

    /// <summary>Adds the squares of 2 * Vector&lt;float&gt;.Count consecutive elements, in double, to their lanes (element i to lane i % 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddSquares(double* acc, int lane, Vector<float> x0, Vector<float> x1)
    {
        var d = Vector<double>.Count;
        Vector.Widen(x0, out var a, out var b);
        Vector.Widen(x1, out var e, out var f);
        var pa = acc + (lane & (Lanes - 1));
        var pb = acc + ((lane + d) & (Lanes - 1));
        var pe = acc + ((lane + 2 * d) & (Lanes - 1));
        var pf = acc + ((lane + 3 * d) & (Lanes - 1));
        (Vector.Load(pa) + a * a).Store(pa);
        (Vector.Load(pb) + b * b).Store(pb);
        (Vector.Load(pe) + e * e).Store(pe);
        (Vector.Load(pf) + f * f).Store(pf);
    }

    private sealed class Job : ChunkJob
    {
        private Slice _slice;
        private Constants _c;
        private float? _applyScale;
        private double* _sums;

        /// <summary>Moments pass when <paramref name="applyScale"/> is null (sums go to <paramref name="sums"/>), else the apply pass.</summary>
        public void Set(in Slice slice, in Constants c, float? applyScale, double* sums)
        {
            _slice = slice;
            _c = c;
            _applyScale = applyScale;
            _sums = sums;
        }

        protected override void RunChunk(int index)
        {
            var start = (nint)index * ChunkSize;
            var end = Math.Min(start + ChunkSize, _slice.Length);
            if (_applyScale is { } scale)
            {
                Apply(_slice, _c, scale, start, end);
                return;
            }
            Moments(_slice, _c, start, end, out var ws, out var us);
            _sums[2 * index] = ws;
            _sums[2 * index + 1] = us;
        }
    }
}
